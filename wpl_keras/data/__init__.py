"""wpl_keras.data"""
