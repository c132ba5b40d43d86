"""freetickets.flops"""
