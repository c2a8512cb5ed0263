from kt.cli.main import main

main()
