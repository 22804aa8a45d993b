"""`python -m scaling.coordsuite`: a shim into scaling.cli.coordsuite, where the command lives."""

if __name__ == "__main__":
    from scaling.cli.coordsuite import main

    main()
