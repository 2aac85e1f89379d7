"""wpl_keras.tuner"""
