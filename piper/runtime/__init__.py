"""piper.runtime"""
