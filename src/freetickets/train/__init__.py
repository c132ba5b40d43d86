"""freetickets.train"""
