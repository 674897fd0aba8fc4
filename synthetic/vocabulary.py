"""Static vocabularies of the synthetic world: countries, devices, inventory formats, names."""

from __future__ import annotations

import numpy as np

# code, traffic weight, UTC offset (hours), language, [(ISO-3166-2 subdivision, weight)]
COUNTRIES: tuple[tuple[str, float, float, str, tuple[tuple[str, float], ...]], ...] = (
    ("USA", 0.36, -5, "en", (("CA", .12), ("TX", .09), ("FL", .07), ("NY", .06), ("PA", .04), ("IL", .04),
                            ("OH", .035), ("GA", .033), ("NC", .032), ("MI", .03), ("NJ", .028), ("VA", .026),
                            ("WA", .024), ("AZ", .022), ("MA", .021), ("TN", .021), ("IN", .02), ("CO", .017))),
    ("GBR", 0.08, 0, "en", (("ENG", .84), ("SCT", .08), ("WLS", .05), ("NIR", .03))),
    ("DEU", 0.07, 1, "de", (("NW", .22), ("BY", .16), ("BW", .13), ("NI", .10), ("HE", .08), ("BE", .05), ("SN", .05))),
    ("IND", 0.07, 5.5, "en", (("MH", .10), ("UP", .10), ("KA", .06), ("TN", .06), ("DL", .05), ("GJ", .05), ("WB", .05))),
    ("JPN", 0.06, 9, "ja", (("13", .11), ("14", .07), ("27", .07), ("23", .06), ("11", .06), ("12", .05), ("01", .04))),
    ("FRA", 0.05, 1, "fr", (("IDF", .19), ("ARA", .12), ("NAQ", .09), ("OCC", .09), ("HDF", .09), ("PAC", .08))),
    ("BRA", 0.05, -3, "pt", (("SP", .22), ("MG", .10), ("RJ", .08), ("BA", .07), ("PR", .05), ("RS", .05))),
    ("CAN", 0.04, -5, "en", (("ON", .39), ("QC", .22), ("BC", .14), ("AB", .12))),
    ("AUS", 0.03, 10, "en", (("NSW", .32), ("VIC", .26), ("QLD", .20), ("WA", .10))),
    ("MEX", 0.03, -6, "es", (("CMX", .20), ("MEX", .15), ("JAL", .08), ("NLE", .07))),
    ("ESP", 0.025, 1, "es", (("MD", .15), ("CT", .16), ("AN", .18), ("VC", .11))),
    ("ITA", 0.025, 1, "it", (("25", .17), ("62", .10), ("72", .10), ("82", .08), ("21", .07))),
    ("IDN", 0.02, 7, "id", (("JK", .10), ("JB", .18), ("JT", .13), ("JI", .15))),
    ("KOR", 0.02, 9, "ko", (("11", .19), ("41", .26), ("26", .07), ("28", .06))),
    ("NLD", 0.015, 1, "nl", (("NH", .17), ("ZH", .21), ("NB", .15), ("UT", .08))),
    ("POL", 0.015, 1, "pl", (("14", .14), ("24", .12), ("12", .09))),
    ("TUR", 0.015, 3, "tr", (("34", .19), ("06", .07), ("35", .05))),
    ("ZAF", 0.01, 2, "en", (("GP", .26), ("KZN", .19), ("WC", .12))),
)

# Share of a country's daily traffic by LOCAL hour (quiet nights, evening peak).
LOCAL_HOUR_CURVE = np.array([
    0.025, 0.017, 0.012, 0.009, 0.008, 0.010, 0.017, 0.030, 0.042, 0.048, 0.050, 0.052,
    0.054, 0.053, 0.052, 0.052, 0.053, 0.056, 0.060, 0.064, 0.066, 0.062, 0.050, 0.036,
])

# OpenRTB 2.6 DeviceType: 2 PC, 3 Connected TV, 4 Phone, 5 Tablet.
# (devicetype, make, model, os, osv, ua, weight)
DEVICE_PROFILES: tuple[tuple[int, str | None, str | None, str, str, str, float], ...] = (
    (4, "Apple", "iPhone", "iOS", "18.1",
     "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", .16),
    (4, "Apple", "iPhone", "iOS", "17.6.1",
     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", .07),
    (4, "Samsung", "SM-S928B", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .05),
    (4, "Samsung", "SM-A546B", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .06),
    (4, "Samsung", "SM-A156B", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-A156B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.100 Mobile Safari/537.36", .04),
    (4, "Google", "Pixel 8", "Android", "15",
     "Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .03),
    (4, "Xiaomi", "23129RAA4G", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; 23129RAA4G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.81 Mobile Safari/537.36", .05),
    (4, "Motorola", "moto g54 5G", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; moto g54 5G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.86 Mobile Safari/537.36", .02),
    (4, "OnePlus", "CPH2581", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; CPH2581) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .015),
    (4, "Oppo", "CPH2591", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; CPH2591) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.6613.146 Mobile Safari/537.36", .015),
    (5, "Apple", "iPad", "iOS", "18.1",
     "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", .04),
    (5, "Samsung", "SM-X710", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Safari/537.36", .015),
    (5, "Amazon", "KFTRWI", "Android", "9",
     "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/130.3.1 like Chrome/130.0.6723.102 Safari/537.36", .01),
    (2, "Generic", "Windows PC", "Windows", "10",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", .17),
    (2, "Generic", "Windows PC", "Windows", "10",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0", .04),
    (2, "Apple", "Macintosh", "macOS", "14.6",
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15", .06),
    (2, "Apple", "Macintosh", "macOS", "15.1",
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", .04),
    (2, "Generic", "Linux PC", "Linux", "",
     "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", .01),
    (3, "Roku", "3941X", "Roku OS", "13.0", "Roku/DVP-13.0 (13.0.0.4152-46)", .012),
    (3, "Samsung", "QN65Q80C", "Tizen", "7.0",
     "Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) 94.0.4606.31/7.0 TV Safari/537.36", .008),
    (3, "LG", "OLED55C3PUA", "webOS", "23",
     "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/94.0.4606.128 Safari/537.36 WebAppManager", .006),
    (3, "Amazon", "AFTKA", "Fire OS", "7.0",
     "Mozilla/5.0 (Linux; Android 9; AFTKA Build/PS7633.3445N; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36", .006),
)

# OpenRTB ConnectionType by device type: (values, probabilities)
CONNECTION_TYPES = {
    2: ((1, 2), (0.4, 0.6)),
    3: ((1, 2), (0.3, 0.7)),
    4: ((2, 3, 6, 7), (0.55, 0.08, 0.30, 0.07)),
    5: ((2, 6), (0.85, 0.15)),
}

WORDS = ("news", "daily", "tech", "sport", "city", "play", "game", "star", "cook", "home", "auto", "travel",
         "weather", "money", "style", "health", "music", "movie", "photo", "chat", "puzzle", "word", "fit",
         "kid", "shop", "deal", "map", "ride", "food", "pet", "garden", "craft", "zen", "pixel", "nova", "hub",
         "zone", "world", "live", "times", "post", "wire", "report", "guide", "mag", "tribune", "herald",
         "fan", "score", "crypto", "recipe", "solitaire", "block", "quiz", "radio", "stream", "tv", "local")
TLDS = ("com", "com", "com", "com", "net", "org", "co.uk", "de", "fr", "io", "com.br", "jp")
IAB_CATS = ("IAB1", "IAB1-6", "IAB2", "IAB3", "IAB3-1", "IAB5", "IAB7", "IAB8", "IAB9", "IAB9-30", "IAB12",
            "IAB13", "IAB15", "IAB15-10", "IAB17", "IAB18", "IAB19", "IAB20", "IAB22")
SECTIONS = ("", "news/", "sports/", "entertainment/", "business/", "tech/", "lifestyle/", "video/")

# Placement formats: 0 banner, 1 video, 2 native. Size/pos vocabularies by (kind, format);
# kind 0 web, 1 mobile app, 2 CTV app. OpenRTB AdPosition: 0 unknown, 1 above the fold,
# 3 below the fold, 4 header, 5 footer, 6 sidebar, 7 full screen.
FORMAT_NAMES = ("banner", "video", "native")
FORMAT_BY_KIND = {0: (0.80, 0.12, 0.08), 1: (0.70, 0.15, 0.15), 2: (0.0, 1.0, 0.0)}
SIZES = {
    (0, 0): (("300x250", .40), ("728x90", .20), ("160x600", .06), ("300x600", .08), ("970x250", .05),
             ("320x50", .11), ("320x100", .05), ("336x280", .05)),
    (1, 0): (("320x50", .50), ("300x250", .25), ("320x480", .15), ("728x90", .05), ("768x1024", .05)),
    (0, 1): (("640x360", .50), ("640x480", .20), ("1280x720", .30)),
    (1, 1): (("1080x1920", .30), ("640x360", .40), ("1280x720", .30)),
    (2, 1): (("1920x1080", .80), ("1280x720", .20)),
}
POSITIONS = {
    (0, 0): ((1, .35), (3, .25), (4, .10), (5, .05), (6, .15), (0, .10)),
    (1, 0): ((1, .30), (4, .10), (5, .30), (0, .30)),
    (0, 1): ((1, .50), (3, .20), (0, .30)),
    (1, 1): ((7, .70), (0, .30)),
    (2, 1): ((7, .90), (0, .10)),
}
APP_SHARE_OF_MOBILE = 0.55  # phone/tablet impressions in apps (the rest: mobile web)
FULLSCREEN_SIZES = {"320x480", "768x1024", "1080x1920"}
FLOOR_MEDIAN = {0: 0.40, 1: 2.50, 2: 0.80}  # by format; CTV video x3
CREATIVE_TYPES = ("banner", "video", "native", "rich_media")
CREATIVE_TYPE_P = (0.55, 0.20, 0.15, 0.10)
COMPATIBLE = {0: (0, 3), 1: (1,), 2: (2,)}  # placement format -> creative types
SEGMENT_PROVIDERS = (("7", "acme-dmp", 1000), ("12", "intentiq-contextual", 5000))
NATIVE_REQUEST = ('{"ver":"1.2","context":1,"plcmttype":1,"assets":[{"id":1,"required":1,"title":{"len":90}},'
                  '{"id":2,"required":1,"img":{"type":3,"wmin":300,"hmin":250}},{"id":3,"data":{"type":2,"len":140}}]}')
