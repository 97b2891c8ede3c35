"""edge/queue"""
