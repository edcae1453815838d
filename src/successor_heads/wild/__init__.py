"""wild"""
