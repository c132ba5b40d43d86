"""freetickets.report"""
