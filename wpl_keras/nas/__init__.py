"""wpl_keras.nas"""
