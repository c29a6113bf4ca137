"""piper.frontend"""
