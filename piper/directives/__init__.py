"""piper.directives"""
