from helpers.sim.cli import main

main()
