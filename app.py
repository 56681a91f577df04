"""MobileVD Explorer: the Space's app_file; flags, UI and launch are in app/main.py."""
from app.main import main

if __name__ == "__main__":
    main()
