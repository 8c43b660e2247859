"""An authenticator app outside Fleet, for the 2FA end-to-end test.

    otp.py code URL [STEPS]   the TOTP code of the otpauth URL, STEPS time
                              steps from now (pyotp)
    otp.py qr                 the text of the QR code in the base64 PNG on
                              stdin (zxing-cpp)
"""

import base64
import io
import sys
import time


def main() -> None:
    if sys.argv[1] == "code":
        import pyotp

        totp = pyotp.parse_uri(sys.argv[2])
        steps = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        print(totp.at(time.time() + steps * totp.interval))
    elif sys.argv[1] == "qr":
        import zxingcpp
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(sys.stdin.read())))
        found = zxingcpp.read_barcodes(image)
        if len(found) != 1:
            sys.exit(f"expected one QR code, found {len(found)}")
        print(found[0].text)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
