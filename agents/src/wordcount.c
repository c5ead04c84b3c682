/*
 * wordcount: a caxton-v1 agent written in C.
 *
 * For each message it counts the words, characters (Unicode code points) and UTF-8 bytes of the
 * envelope's string `content`, and keeps running totals for as long as its instance lives.
 * The reply is one JSON object, streamed in two chunks:
 *
 *     {"words":2,"chars":11,"bytes":12   then   ,"messages":1,"total_words":2}
 *
 * Words are runs of non-whitespace, whitespace being the same set as Python's str.split() uses
 * (Unicode White_Space plus the ASCII separators U+001C..U+001F). A message whose content is not a
 * string gets {"error":...} and is not counted; a message that is not a JSON object at all makes
 * handle_message return 1, which the host reports as WASM_AGENT_FAILED.
 *
 * Freestanding C: no libc, no allocator, only the clang and wasm-ld of a stock Debian. Build with
 * tools/wasm/build-examples.sh, which runs (plus warnings and stack flags):
 *
 *     clang --target=wasm32 -O2 -ffreestanding -nostdlib -Wl,--no-entry \
 *         -o agents/wordcount.wasm agents/src/wordcount.c
 *
 * The exports are named with __attribute__((export_name)), the host imports with
 * import_module/import_name, so no linker --export or --allow-undefined flags are needed.
 */

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("caxton"), import_name(name)))

/* Host functions (DESIGN §4.2). Pointers are offsets into this module's memory. */
IMPORT("reply") void caxton_reply(const void *ptr, u32 len);
IMPORT("log") void caxton_log(u32 level, const void *ptr, u32 len);

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARNING = 2, LOG_ERROR = 3 };

/* Set by the linker: the first address after the stack and static data. */
extern u8 __heap_base;

/* State kept between messages; a new instance (after a trap, or a new version) starts at 0. */
static u64 messages;
static u64 total_words;

static u32 length(const char *s) {
    u32 n = 0;
    while (s[n]) n++;
    return n;
}

static void log_text(u32 level, const char *text) { caxton_log(level, text, length(text)); }

/* ---- memory ------------------------------------------------------------------------------- */

/*
 * The host writes one message and calls handle_message at once, so one buffer at __heap_base is
 * enough: grow memory until it holds `len` bytes there. memory.grow fails past the agent's
 * [limits].max_memory_bytes; returning -1 then makes the host report a bad pointer.
 */
EXPORT("caxton_alloc") u8 *caxton_alloc(u32 len) {
    u32 base = (u32)&__heap_base;
    u32 end = base + len;
    if (end < base) return (u8 *)-1; /* overflow */
    u32 pages = (u32)__builtin_wasm_memory_size(0);
    u32 needed = (u32)(((u64)end + 65535) >> 16);
    if (needed > pages && __builtin_wasm_memory_grow(0, needed - pages) == (unsigned long)-1) {
        return (u8 *)-1;
    }
    return &__heap_base;
}

/* ---- counting ----------------------------------------------------------------------------- */

typedef struct {
    u64 words, chars, bytes;
    int in_word;
} Counts;

static int is_space(u32 cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
           cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static u32 utf8_length(u32 cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

/* Count one code point of the decoded text. */
static void count(Counts *c, u32 cp) {
    c->chars++;
    c->bytes += utf8_length(cp);
    if (is_space(cp)) {
        c->in_word = 0;
    } else if (!c->in_word) {
        c->in_word = 1;
        c->words++;
    }
}

static int hex4(const u8 *p, const u8 *end, u32 *out) {
    u32 v = 0;
    if (end - p < 4) return 0;
    for (int i = 0; i < 4; i++) {
        u8 h = p[i];
        u32 d = h >= '0' && h <= '9'   ? (u32)(h - '0')
                : h >= 'a' && h <= 'f' ? (u32)(h - 'a' + 10)
                : h >= 'A' && h <= 'F' ? (u32)(h - 'A' + 10)
                                       : 16;
        if (d == 16) return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/*
 * Decode the JSON string starting after its opening quote at `p`, counting every code point.
 * Returns the address after the closing quote, or 0 when the string is malformed.
 * Escapes (\n, \u00e9, surrogate pairs \ud83d\ude00, ...) count as the character they stand for;
 * a lone surrogate counts as U+FFFD. Invalid UTF-8 bytes count as one U+FFFD each.
 */
static const u8 *count_string(const u8 *p, const u8 *end, Counts *c) {
    while (p < end) {
        u8 b = *p++;
        u32 cp;
        if (b == '"') return p;
        if (b == '\\') {
            if (p >= end) return 0;
            u8 e = *p++;
            switch (e) {
            case '"': case '\\': case '/': cp = e; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u': {
                u32 low;
                if (!hex4(p, end, &cp)) return 0;
                p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' &&
                    p[1] == 'u' && hex4(p + 2, end, &low) && low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                    cp = 0xFFFD;
                }
                break;
            }
            default: return 0;
            }
        } else if (b < 0x80) {
            cp = b;
        } else {
            /* A UTF-8 sequence: the lead byte says how many continuation bytes follow. */
            u32 more = b >= 0xF0 && b <= 0xF4 ? 3 : b >= 0xE0 ? 2 : b >= 0xC2 ? 1 : 0;
            if (b >= 0xF5 || more == 0 || end - p < (long)more) {
                cp = 0xFFFD;
            } else {
                cp = b & (0x3F >> more);
                for (u32 i = 0; i < more; i++) {
                    if ((p[i] & 0xC0) != 0x80) {
                        cp = 0xFFFD;
                        more = i; /* resume at the byte that broke the sequence */
                        break;
                    }
                    cp = (cp << 6) | (p[i] & 0x3F);
                }
                p += more;
            }
        }
        count(c, cp);
    }
    return 0;
}

/* ---- minimal JSON scanning ---------------------------------------------------------------- */

static const u8 *skip_space(const u8 *p, const u8 *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Skip a string whose opening quote is at p[-1]; return the address after its closing quote. */
static const u8 *skip_string(const u8 *p, const u8 *end) {
    while (p < end) {
        u8 b = *p++;
        if (b == '"') return p;
        if (b == '\\') p++;
    }
    return 0;
}

/*
 * Skip any JSON value starting at `p` (not validated in depth: nested objects and arrays are
 * matched by their brackets, literals and numbers end at the next delimiter).
 */
static const u8 *skip_value(const u8 *p, const u8 *end) {
    if (p >= end) return 0;
    if (*p == '"') return skip_string(p + 1, end);
    if (*p == '{' || *p == '[') {
        u32 depth = 0;
        while (p < end) {
            u8 b = *p++;
            if (b == '"') {
                p = skip_string(p, end);
                if (!p) return 0;
            } else if (b == '{' || b == '[') {
                depth++;
            } else if ((b == '}' || b == ']') && --depth == 0) {
                return p;
            }
        }
        return 0;
    }
    const u8 *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p > start ? p : 0;
}

static int is_content_key(const u8 *key, const u8 *after) {
    static const char name[] = "\"content\"";
    if (after - key != (long)sizeof name - 1) return 0;
    for (u32 i = 0; i < sizeof name - 1; i++)
        if (key[i] != (u8)name[i]) return 0;
    return 1;
}

/*
 * Find the top-level "content" member of the object in [p, end). Returns 1 and sets *value to
 * the start of its value (the last one if the key repeats, as Python's json does), 0 when the
 * object has no such member, -1 when the text is not a JSON object.
 */
static int find_content(const u8 *p, const u8 *end, const u8 **value) {
    int found = 0;
    p = skip_space(p, end);
    if (p >= end || *p++ != '{') return -1;
    p = skip_space(p, end);
    if (p < end && *p == '}') return skip_space(p + 1, end) == end ? 0 : -1;
    for (;;) {
        const u8 *key = skip_space(p, end);
        if (key >= end || *key != '"') return -1;
        const u8 *after_key = skip_string(key + 1, end);
        if (!after_key) return -1;
        p = skip_space(after_key, end);
        if (p >= end || *p++ != ':') return -1;
        p = skip_space(p, end);
        if (is_content_key(key, after_key)) {
            *value = p;
            found = 1;
        }
        p = skip_value(p, end);
        if (!p) return -1;
        p = skip_space(p, end);
        if (p >= end) return -1;
        if (*p == '}') return skip_space(p + 1, end) == end ? found : -1;
        if (*p++ != ',') return -1;
    }
}

/* ---- replies ------------------------------------------------------------------------------ */

static char out[160];
static u32 out_len;

static void put(const char *s) {
    while (*s && out_len < sizeof out) out[out_len++] = *s++;
}

static void put_number(u64 n) {
    char digits[20];
    u32 i = 0;
    do {
        digits[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (i && out_len < sizeof out) out[out_len++] = digits[--i];
}

static void flush(void) {
    caxton_reply(out, out_len);
    out_len = 0;
}

/* ---- entry points ------------------------------------------------------------------------- */

EXPORT("agent_init") int agent_init(void) {
    messages = 0;
    total_words = 0;
    log_text(LOG_INFO, "wordcount ready");
    return 0;
}

EXPORT("handle_message") int handle_message(const u8 *message, u32 len) {
    const u8 *end = message + len;
    const u8 *value = 0;
    Counts c = {0, 0, 0, 0};

    int found = find_content(message, end, &value);
    if (found < 0) {
        log_text(LOG_ERROR, "wordcount: the message is not a JSON object");
        return 1;
    }
    if (!found || *value != '"' || !count_string(value + 1, end, &c)) {
        log_text(LOG_WARNING, "wordcount: no string content to count");
        put("{\"error\":\"wordcount counts text: content must be a JSON string\"}");
        flush();
        return 0;
    }

    messages++;
    total_words += c.words;

    /* First chunk: this message's counts. */
    put("{\"words\":");
    put_number(c.words);
    put(",\"chars\":");
    put_number(c.chars);
    put(",\"bytes\":");
    put_number(c.bytes);
    flush();

    /* Second chunk: the running totals of this instance. */
    put(",\"messages\":");
    put_number(messages);
    put(",\"total_words\":");
    put_number(total_words);
    put("}");
    flush();
    return 0;
}
