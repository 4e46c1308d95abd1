from agents.serve import main

main()
