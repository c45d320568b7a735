"""localign.data"""
