"""wpl_keras.experiments"""
