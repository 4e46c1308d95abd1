"""Did-you-mean for names a user types: shared by the controller's messages and the method
registry's (which also runs on the boards' Python 3.6, so no newer syntax here)."""
import difflib


def guess(word, known):
    """The known name a misspelt one most likely meant, or None."""
    found = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return found[0] if found else None


def with_guess(word, known, fix):
    """A fix led by the name the user probably meant: "did you mean sst2? Otherwise ..."."""
    meant = guess(word, known)
    return "did you mean %s? Otherwise %s" % (meant, fix) if meant else fix
