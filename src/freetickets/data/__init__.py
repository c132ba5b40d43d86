"""freetickets.data"""
