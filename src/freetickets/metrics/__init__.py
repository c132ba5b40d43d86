"""freetickets.metrics"""
