"""localign.losses"""
