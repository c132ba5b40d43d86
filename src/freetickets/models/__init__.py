"""freetickets.models"""
