from modelcanary.cli.main import main

main()
