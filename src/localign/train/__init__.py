"""localign.train"""
