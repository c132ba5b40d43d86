"""freetickets.ensembles"""
