"""freetickets.utils"""
