from compresslab.cli import main

main()
