from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "chats" ADD "pinned" BOOL NOT NULL DEFAULT False;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "chats" DROP COLUMN "pinned";"""


MODELS_STATE = (
    "eJztnetv2zgSwP8Vwl8uBZxs4iZprlgs4KTu1bt5FIlzXWxvoTASYwuRSS1J5YG9/u831M"
    "N6UYqU2q6s06fEFIeSfqSGnBk+/u7NmUUcsTN07d/Ic+89+rtH8ZzAP5krfdTDrhunqwSJ"
    "bx0/K3Zt4548+4n4VkiOTQnpd9gRBJIsIkxuu9JmVOUeUjT8PEYggG5uHGd+b/xsW78YPw"
    "ticiJ/ubl5j2wpkG0hWyDXu3Vss48YdZ6RnBH0OGMOUcL/EOjq03B7cHCo8gnJOLF21BNY"
    "zIRHsOl0HTfzqP2XRwzJpgQEONzy65+QbFOLPBER/XTvjTubOFYKsG2pAvx0Qz67ftrJDP"
    "OPfk71IreGyRxvTuPc7rOcMbrIDu+pUqeEEo4lsRLQqec4Yf1EScGzQoLkHlk8pBUnWOQO"
    "e46qOiUdPEGc1jOM84uJcTWaGEYvV62RRAJ+mGQyqpqETaXw33+OnwyH0Kmcwc+9w2/BfW"
    "IOQS51w38PL08+DS+39g7fqBsyaFdBgzsPrwz8S9/8IrDEQSE+9Riz/7cG6Cj/clBHCTHr"
    "+KtYP+zd3Sq0d3eLcatrinfMN/iSjBkWszqYM2ItpH24XwH24X4ha3UpjRqIKRgGlnnSH+"
    "CKtOdETzstmYFthaI70T+biB5e0LoAvR1qsxL0k/HZ6GoyPPusbjcX4i/H5zecjNSVgZ/6"
    "nEndymqgRSHoy3jyCamf6I+L85GPlwk55f4d43yTP3rqmbAnmUHZo4GthOKNUiNqqVp3sJ"
    "CGJ15V71nZJdR8+MhNqfgNqeiISWlNc/LA7l9Vz2nJrpabXMvwOXJDN/gbU6mv3YREpmqB"
    "zyYq66l6iO3B3v67/aO3h/tHkMV/0EXKu5IKH59PoF9Uw+q7e+2IT+HK0/0IY3Z7SsGY8S"
    "GP4YkwNXVDvdDyuQ6L2TC436LWE6XGXzPHjws7JNmo4N3hjYkMhmzDq5Phh1HPJ3yLzftH"
    "zC0jhVpdYQOWSVnkzV+aD+bZFEzx1Iej3kI9c2RvepYtR1RyvTUaX+2XWqQqn+GwaTWT9M"
    "uMIQtswMcZlkgyhE2TecATYQqJjN8TLt4jAc1n26YCbd1h2yEW2IlEQHb2pq9sRNGH7DkD"
    "dHlF/4dia25TW70MGKBgkpozTKcELt4xbpJtjzoMW2IHnZMHwhFGLhYCbgGlqV9QzipM1k"
    "KtVVVhhY2zuQbrErRVv8RArd/bd6P4ZnX7VUbxoH8YN+o6I9JSrzKSGzaSW7WNDMTUE9Vj"
    "HEq00AnxdlAB8NtBIWB1KQ1YYg4dRx3AsUT7GvCgkkttUOJSG+RdaqZjE1oLcSzRPsTL1x"
    "EWkTDKyvP99eriXM83lsj2urYp0X+RA6OyzeNcwlWhSPWsEc+ts+HvWdQnpxfH2S5TFXCc"
    "182spumbFHmV7dsw5Cs2fX1c67N9Gwa3qumbbFQp2xceAJ1fn57+KOMXFLzsacxeP71fZv"
    "CCKSirxl8RAAIDUWCV4tuhKgQqiJQAF8zHmxvburlBc/yMbgkYmUwQim6DiGjQ0aAt9b+F"
    "xeyWwUsjT4C1en09/iDeaEKwq7/fyybt1x57pEGb9lwrioX82QVn19HzFtu+0pZOLYNoId"
    "C+cc5qhpJdyPD/0NmQUHE1az0t2dV6U2pdE1kKnz4zWKijTBcCLVSmBwdVlOnBQbEyVdfS"
    "ypQTeFOhPg+LPNhmrY5LJ9s+7EcVoB8VIj/KAlejakJrDcUSIu3Du6zZconZW8/QJueGy9"
    "nc1XQWE/JUYJjnBNfnPO31VgS7rC8Y/T4p94csuoLTi/N/RdmzTpKMK5XMXUXH4xpV8tFh"
    "uIB9Ri5D/k4Jror97s679cP/cHF9fDpCny9HJ+OrceiYWvS8/kWVBAl2YMdfjoanWdbMNd"
    "x6lCOJ9fL958FmAlaKipJHMMJB/4oaLr684PomuQwODleluJcSNU4Ych7nhEpjToTAU1LP"
    "i6oX7vypecyuTSnRoD1mzCGY6vHGQhmktyC1qqa7SFmvqji+uDhNdYTH42xPd312PIJhyJ"
    "u0ysiz9j1y9RpyUqRrvi+GAxY+zy4cUBIOSDaqVDjgEizyy/HJpCwckOgAA+Wq6fqOQ8mP"
    "v10SBxfMNghRnwWlbKBnpQj3t1VGTCJcmqBJgmRx3CRZaS+HTi4oQaHEDhoKYasPRyJOXM"
    "cmApmY8yBs4d+pjwJTvw8ygM4M5vxhBELSE/lAydJL72b6NWumH2f1gh1R/hbOS1q+J0OS"
    "p1oOjCh/K+Cu23PRhZWK2/lmBhiqhJWCrqWOBosl1ugeNNnc9YdwG6rJCOe6STzFqmwh0A"
    "aP97pVWRc1W3XUzKMUHsGoNys7LdU+1F2kbMO0chDpqu/ezsl1fiuNdzvosm3FpS5grWwH"
    "OQ9ZDagBEeTmImyQhgZ0WUisqIRXhsgaBnzlIUiJHcNnWBN7RrCjXYm20gWGS3ht2mnBjn"
    "YF2hZnrgtmfbETvFB/60Q79a3pI2dYaqNlJcvCYpFWuLlWvTDMxX6YvJbzOyXTtdsXY5Lm"
    "TOc0rB2SjJbEbFgLrhqTTHy5+t058s12CVCrBx8b1marYk19rHW3PUm2YduxoKR1hXo3hP"
    "ZKI71XhD8QfhWsGutp4r3pDP2yqK/wsxrRErRqwd9htGQNpfZhibZhQVgi7lGkhuloi7mE"
    "Bru6eO6bPsICqQWxyIMKS+7Fklkot/wbfEcI+D7Y9rXqWCPM3i2CKxhlFIeFH7DjaeLCxa"
    "vRFwLftRi9oV2jDvPSVqPnxiU/Zp3vtdL7H7B2i6vFtVIN5vnzOC1cddPlL2r7KUaJWjrL"
    "0aJlQJKfej05QVAY2oomm8gZZ950hn5SAxF/ZslPD3uaxb1LLFejqr4u9nKDQoLVut3klR"
    "80ecXCmu5AxfoLrHqs6w5SAf526SgVoM+tF/MbfY3GmJBY3yT43Ua3yKZEYFqNthnxl1Yj"
    "7rZ97bZ9bYAHpKHbvvrUtaPhoDbKRsKEVz95JNx+dQepggXCnCDLFqosq4+ov29qwAR+Cq"
    "ZmW9sc+ZvrgElNXBixIn+5gPakkaUW3k3ebtb498eeI9JCh0jSfx3sU1z7EJGcYAujXKuZ"
    "k9f4lQix5b9pU/Eila8JDpQtIk2KdctIaywj7dYiFLfz9q5FcOy5v8M/ttTUkcWwsOKgp0"
    "C6C9/nP68AFdwk2kSgvlerrIgOeRHyxDw0re/1Bdx58Q51gQ+hSsg/ecbl60P+8WmaG9aT"
    "FIb8szPUvhNQxWk9DWuVleh40WSP19NJxgbb2IAEEQLK/c42pLwvV0FJbQK1avdbhKzAC5"
    "cgWjaxJq7ASjNq7Ckl1rZNUSj5Pj581+/AKp7y+x0FdX62ZvnZglUldT1BaanO5/aiz62z"
    "movRt9hqVufBCgKfyivPkk3ItrDmN6SmIyalVU2eXBuKe0VFpyW7am50NXfTCrppBd20gs"
    "LTZAm3zVlPY9KEV/qlp8jGeV6yZYqBdvZFs+wLdRJRzRMiEyJdgLlagFl9VDUIh9lbSHev"
    "0qk+eyWn+uxpTvVhVGpX/BWvGUmIdKtGNmnVyLf/AS9D0Jk="
)
