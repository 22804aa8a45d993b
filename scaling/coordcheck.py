"""`python -m scaling.coordcheck`: a shim into scaling.cli.coordcheck, where the command lives."""

if __name__ == "__main__":
    from scaling.cli.coordcheck import main

    main()
