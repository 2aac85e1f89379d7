"""The controllers that propose architectures: the ENAS LSTM, its REINFORCE update, NAO."""
