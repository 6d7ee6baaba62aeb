"""(family entries under construction)"""
