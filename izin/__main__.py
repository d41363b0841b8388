from izin.cli import main

main()
