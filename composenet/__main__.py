from composenet.cli import main

main()
