/*
 * asker: a caxton-v1 agent that asks another agent by capability (C compiled to WebAssembly).
 *
 * On a request whose content is a text, it sends that text to whichever agent provides the
 * capability "text-statistics" (the wordcount example), through caxton.send_message, and
 * answers at once that it asked. The router delivers the request, then hands the reply back
 * to asker as an `inform` message (a `failure` when nobody could answer), threaded by
 * `in_reply_to`; asker answers that one with the figures it received. Every step is recorded in
 * the conversation, so `caxton conversations show ID` prints the whole exchange:
 *
 *     request  client -> asker                  "the quick brown fox"
 *     inform   asker -> client                  "asked text-statistics ..."
 *     request  asker -> [text-statistics]       "the quick brown fox"
 *     inform   wordcount -> asker               {"words":4,...}
 *     inform   asker -> client                  "text-statistics answered: {...}"
 *
 * Freestanding C like wordcount.c: no libc, only the `caxton` host imports.
 */

typedef unsigned char u8;
typedef unsigned int u32;

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("caxton"), import_name(name)))

IMPORT("reply") void caxton_reply(const void *ptr, u32 len);
IMPORT("log") void caxton_log(u32 level, const void *ptr, u32 len);
IMPORT("send_message") int caxton_send_message(const void *ptr, u32 len);

enum { LOG_INFO = 1, LOG_WARNING = 2 };

extern u8 __heap_base;

/* The outgoing envelope is assembled here; text longer than this is refused. */
static u8 out[65536];
static u32 out_len;

static u32 length(const char *s) {
    u32 n = 0;
    while (s[n]) n++;
    return n;
}

static void reply_text(const char *text) { caxton_reply(text, length(text)); }

static int append(const void *data, u32 len) {
    if (len > sizeof out - out_len) return 0;
    const u8 *bytes = data;
    for (u32 i = 0; i < len; i++) out[out_len + i] = bytes[i];
    out_len += len;
    return 1;
}

static int append_text(const char *text) { return append(text, length(text)); }

EXPORT("caxton_alloc") u8 *caxton_alloc(u32 len) {
    u32 base = (u32)&__heap_base;
    u32 end = base + len;
    if (end < base) return (u8 *)-1;
    u32 pages = (u32)__builtin_wasm_memory_size(0);
    u32 needed = (u32)(((unsigned long long)end + 65535) >> 16);
    if (needed > pages && __builtin_wasm_memory_grow(0, needed - pages) == (unsigned long)-1) {
        return (u8 *)-1;
    }
    return &__heap_base;
}

/* ---- minimal JSON scanning (top-level members of the envelope) ----------------------------- */

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

static int key_is(const u8 *key, const u8 *after, const char *name) {
    /* key points at the opening quote, after just past the closing one */
    u32 n = length(name);
    if ((u32)(after - key) != n + 2) return 0;
    for (u32 i = 0; i < n; i++)
        if (key[i + 1] != (u8)name[i]) return 0;
    return 1;
}

typedef struct {
    const u8 *start, *end; /* the raw JSON text of the value, or 0 when absent */
} Span;

/* Find the top-level member `name` of the object in [p, end); 0 when it is not a JSON object. */
static int member(const u8 *p, const u8 *end, const char *name, Span *value) {
    value->start = value->end = 0;
    p = skip_space(p, end);
    if (p >= end || *p++ != '{') return 0;
    p = skip_space(p, end);
    if (p < end && *p == '}') return 1;
    for (;;) {
        const u8 *key = skip_space(p, end);
        if (key >= end || *key != '"') return 0;
        const u8 *after_key = skip_string(key + 1, end);
        if (!after_key) return 0;
        p = skip_space(after_key, end);
        if (p >= end || *p++ != ':') return 0;
        p = skip_space(p, end);
        const u8 *after_value = skip_value(p, end);
        if (!after_value) return 0;
        if (key_is(key, after_key, name)) {
            value->start = p;
            value->end = after_value;
        }
        p = skip_space(after_value, end);
        if (p >= end) return 0;
        if (*p == '}') return 1;
        if (*p++ != ',') return 0;
    }
}

static int span_is(Span s, const char *text) {
    u32 n = length(text);
    if (!s.start || (u32)(s.end - s.start) != n) return 0;
    for (u32 i = 0; i < n; i++)
        if (s.start[i] != (u8)text[i]) return 0;
    return 1;
}

/* ---- the agent ---------------------------------------------------------------------------- */

EXPORT("handle_message") int handle_message(const u8 *message, u32 len) {
    const u8 *end = message + len;
    Span performative, content;
    if (!member(message, end, "performative", &performative) ||
        !member(message, end, "content", &content) || !content.start) {
        return 1; /* not an envelope: the host reports WASM_AGENT_FAILED */
    }
    if (span_is(performative, "\"inform\"") || span_is(performative, "\"failure\"")) {
        /* the answer to what we asked: pass it on */
        reply_text(span_is(performative, "\"inform\"") ? "text-statistics answered: "
                                                       : "text-statistics could not answer: ");
        caxton_reply(content.start, (u32)(content.end - content.start));
        return 0;
    }
    if (*content.start != '"') {
        reply_text("{\"error\":\"send the text to count as a string content\"}");
        return 0;
    }
    out_len = 0;
    if (!append_text("{\"capability\":\"text-statistics\",\"performative\":\"request\","
                     "\"content\":") ||
        !append(content.start, (u32)(content.end - content.start)) || !append_text("}")) {
        reply_text("{\"error\":\"the text is too long to forward (64 KiB at most)\"}");
        return 0;
    }
    int sent = caxton_send_message(out, out_len);
    if (sent != 0) {
        static const char refused[] = "send_message refused the request";
        caxton_log(LOG_WARNING, refused, sizeof refused - 1);
        reply_text("{\"error\":\"could not ask text-statistics (send_message refused it)\"}");
        return 0;
    }
    static const char asked[] = "asked text-statistics";
    caxton_log(LOG_INFO, asked, sizeof asked - 1);
    reply_text("asked text-statistics to count the words; its answer follows in this "
               "conversation (caxton conversations show ID)");
    return 0;
}
