"""freetickets.sparse"""
