"""localign.viz"""
