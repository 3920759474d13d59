from flexlock_prefect.cli import main

main()
