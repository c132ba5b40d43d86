"""freetickets.cli"""
