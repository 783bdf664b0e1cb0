// char-limit: a Sluice guardrail in C (wit-bindgen's C generator, Debian's clang
// and wasi-libc).
//
// Fails a request (or response) whose text has more than `max` characters in
// all (Unicode code points). Configuration: {"max": 1000}.
//
// No stdio and no abort(): the core module then imports nothing but the WIT, and
// needs no WASI adapter.

#include <stdlib.h>
#include <string.h>

#include "gen/guardrail.h"

// gen/guardrail.c asks for the `*_component_type.o` wit-bindgen writes beside
// the bindings; `sluice plugins componentize --world guardrail` embeds the same
// type information instead, so this stands in for it.
void __component_type_object_force_link_guardrail(void) {}

static void error(exports_sluice_plugin_checks_error_t *err, const char *why) {
    err->tag = SLUICE_PLUGIN_TYPES_ERROR_INVALID_CONFIG;
    guardrail_string_dup(&err->val.invalid_config, why);
}

// Reads `"max": N` from a JSON object; -1 when absent or not a number.
static long long parse_max(const guardrail_string_t *config) {
    const char *key = "\"max\"";
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen <= config->len; i++) {
        if (memcmp(config->ptr + i, key, klen) != 0) continue;
        size_t j = i + klen;
        while (j < config->len && (config->ptr[j] == ' ' || config->ptr[j] == ':')) j++;
        if (j >= config->len || config->ptr[j] < '0' || config->ptr[j] > '9') return -1;
        long long n = 0;
        while (j < config->len && config->ptr[j] >= '0' && config->ptr[j] <= '9') {
            n = n * 10 + (config->ptr[j] - '0');
            if (n > 1000000000LL) return -1;
            j++;
        }
        return n;
    }
    return -1;
}

void exports_sluice_plugin_meta_describe(exports_sluice_plugin_meta_plugin_info_t *ret) {
    guardrail_string_dup(&ret->name, "char-limit");
    guardrail_string_dup(&ret->version, "0.1.0");
    ret->kind = SLUICE_PLUGIN_TYPES_KIND_GUARDRAIL;
    guardrail_string_dup(&ret->description, "Fails text longer than max characters (C)");
    guardrail_string_dup(&ret->config_schema,
        "{\"type\":\"object\",\"required\":[\"max\"],\"properties\":{\"max\":{\"type\":\"integer\",\"minimum\":0}}}");
    ret->wants_body = false;
}

bool exports_sluice_plugin_meta_validate_config(guardrail_string_t *config,
                                                exports_sluice_plugin_meta_error_t *err) {
    bool ok = parse_max(config) >= 0;
    if (!ok) error(err, "`max` is required: a whole number of characters");
    guardrail_string_free(config);
    return ok;
}

static size_t code_points(const guardrail_string_t *s) {
    size_t n = 0;
    for (size_t i = 0; i < s->len; i++) {
        if ((s->ptr[i] & 0xC0) != 0x80) n++;
    }
    return n;
}

bool exports_sluice_plugin_checks_check(guardrail_string_t *config,
                                        exports_sluice_plugin_checks_check_input_t *input,
                                        exports_sluice_plugin_checks_verdict_t *ret,
                                        exports_sluice_plugin_checks_error_t *err) {
    long long max = parse_max(config);
    guardrail_string_free(config);
    if (max < 0) {
        exports_sluice_plugin_checks_check_input_free(input);
        error(err, "`max` is required: a whole number of characters");
        return false;
    }
    size_t total = 0;
    for (size_t i = 0; i < input->segments.len; i++) {
        total += code_points(&input->segments.ptr[i].text);
    }
    exports_sluice_plugin_checks_check_input_free(input);
    ret->score.is_some = false;
    ret->data.is_some = false;
    if ((long long)total > max) {
        ret->outcome.tag = EXPORTS_SLUICE_PLUGIN_CHECKS_OUTCOME_FAIL;
        guardrail_string_dup(&ret->outcome.val.fail.reason, "the text is longer than the limit");
        ret->outcome.val.fail.deny = false;
    } else {
        ret->outcome.tag = EXPORTS_SLUICE_PLUGIN_CHECKS_OUTCOME_PASS;
    }
    return true;
}
