from charrnn.cli import run

run()
