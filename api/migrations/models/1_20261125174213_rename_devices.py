from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "chats" RENAME COLUMN "device" TO "requested_device";
        ALTER TABLE "messages" RENAME COLUMN "device" TO "running_on";"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "chats" RENAME COLUMN "requested_device" TO "device";
        ALTER TABLE "messages" RENAME COLUMN "running_on" TO "device";"""


MODELS_STATE = (
    "eJztml1z4jYUhv+KxlfJDGUCDSTbO4eQLt0EdhLS7myn4whbAU1sySvJmzDb/PdKso0/sF"
    "mcwTQw3OGjcyT5kTiSXvmH4VEHubzZm0Fh/AZ+GAR6SP7I2BvAgL6fWJVBwImrHW3poS1w"
    "wgWDtqrmEbocSZODuM2wLzAlytUENiXfEeNQWQAkDsCCA46EwGTKm+DhATsPD8CDczBBwJ"
    "5RjgiYzIGYyScXIyLAkfrtQD6bUMgcEHDEwf394JIfN1UnHGrLXsjattReQPC3AFmCTpF0"
    "ZLLVv/+RZkwc9IJ4/Og/WY8YuU6GMHZUBdpuibmvbRI3u9Ke6l0mlk3dwCOJtz8XM0oW7v"
    "JVlXWKCGJQICeFngSuGw1RbAr7Kg2CBWjRSScxOOgRBq4aQBUd9iCxGZY1HI2tu/7Ysoyl"
    "wY0jUvwjkxwDNTEwEVy/vwdfLBeRqZjJx+7pa9hOwiH0Ug3+ad72Ppq3R93TY9UglbMrnH"
    "PDqKSti151FVDAsBJNPcEssJBBFUgvAt4EO0K5YB27JLCTP8fWabdPTtbALb1KeesyBTwB"
    "bDOkcFhhoshSvpQlAnuomHQ2MofbiUKb8Y+3zPT/m758QWdE3Hk0MVbAHw9u+ndj8+azas"
    "7j/Jur+Znjvippa+s8Zz3q5sZpUQn4azD+CNQj+Doa9jVeysWU6RYTv/FXQ/UJBoJahD5b"
    "0Emlg9gaU8uMeuA7bxz1bORh1N/LqMeMUsMe9T63K6iSTBcBe5hMO511kmmnU55MVVk2mT"
    "Ik35Srv4eDvmO70sJVFLt/2M/XgH5eivw8D3wC7SdEKm3FUiH7h7fVXYNvK5+CEsCqKEuY"
    "z+Wc9CyfUc8vWCzG6EUUc14K3Mzudx3chlET7FVrQf/LOLMMxFCPbswvx5ml4Ho0/D12Tw"
    "1C73p0kYMvAfqKTsAKUsmVS2EJ+1xcjvyjCqyL/UnzbPvwL0f3F9d98Pm23xvcDUbD7Mqr"
    "C5VJGrDQCG775nWeNfUtvxrlOGK7fD90dhOwSlQEPcvTtsy/fJn0gJRwXg7MAZcvUBfudq"
    "dbV+Keqj780m6dnp2e/9o9PZcuup8Ly9mKARkMxxKvUicen1IHZ2VQC9wzZI6VKUmNA+Ic"
    "TlHBCFxEkVefbpGrVZcC2JG0dBPWsoMb/Nd4fsXWaFHXNGmbluFcLvLaXt4CiYTiRG2rln"
    "K4CkS6FMlynS49aD+X6kYEgSiiCUzOMReQCMCQ72LEgQ0ZC2Uy3VIDhDvOhoyR6GyutTYI"
    "ZJAI+LIwt/HaNyzDlSaSQhWuIHlEW7z3K8JtIHU0VohujFbT3GL/7e3wdnhDLeSOuco+Ov"
    "bfC7jb3kAf1M3yeb6bOtc66ma4tFTJYEnEFk+ptjwZu0iguk6rdWcyxBhlVVLZImAfhJdt"
    "p7KDeFu3eBsQIrtghaeetfc+maj9Q30QbHcsK4eCa3WVZSnuTSLLe4O9kZNSaj8ZLtlYca"
    "kKuDD2AHkZstpQS0TSm/FoQloFoFcps2U1vFGpfWfAa1fCBXQtzbAi9lzggfZatFUusHzE"
    "KtPOBh5or0HbYdT35bG+XAQvzd9FoYf0XbBGzqCwqn0emQrZC5mrjq8kl+56ssQLUgdlCE"
    "/JJzTX0AdEyfSF35XkvhbeMdhl9znSzODz4s4gPcnku8s3RmGW6Jl3PfOyb7yWX57VeTNk"
    "IobtmVFwMRSVNFbdC8HE52e3QuVAD/cv7+v+RX30jqvJEKmQPcygteg96k9VgXDkvod0W2"
    "t9V95a8V15q+C7ckoEIgXL0h93o2HZAXkRkr9vwbYA/wIX8x1eoIrgKhirleK8KNzI3pao"
    "Ci6qfQmy+cXs9T/A+c/A"
)
