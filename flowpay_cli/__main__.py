from flowpay_cli.main import run

run()
