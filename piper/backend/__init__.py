"""piper.backend"""
