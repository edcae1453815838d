"""cycles"""
