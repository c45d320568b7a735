"""localign.eval"""
