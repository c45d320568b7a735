"""localign.models"""
