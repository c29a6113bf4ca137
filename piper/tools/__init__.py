"""piper.tools"""
