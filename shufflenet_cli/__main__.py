from shufflenet_cli.cli import main

main()
