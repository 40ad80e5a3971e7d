module flowpay/bench/loadgen

go 1.21
