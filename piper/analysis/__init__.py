"""piper.analysis"""
