/* The sign-up form's rules for handles and email addresses, as field errors
 * with stable codes (the password policy lives in reelway_auth). */
#include <string.h>

#include "userpool.h"

/* Handles that would read as the app speaking, or collide with its routes. */
static const char *const reserved[] = {
    "admin",    "administrator", "root",  "system",  "support",   "help",      "api",   "auth",
    "me",       "reelway",       "reels", "null",    "undefined", "moderator", "mod",   "staff",
    "security", "www",           "login", "logout",  "signup",    "settings",  "about", "official",
    "account",  "everyone",      "feed",  "uploads",
};

void up_field_errors_add(up_field_errors_t *errs, const char *field, const char *code,
                         const char *message)
{
    if (errs->count < sizeof errs->items / sizeof errs->items[0])
        errs->items[errs->count++] = (rw_field_error_t){field, code, message};
}

bool up_ascii_lower(const char *s, char *out, size_t cap)
{
    size_t n = strlen(s);
    if (n >= cap)
        return false;
    for (size_t i = 0; i <= n; i++)
        out[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
    return true;
}

static bool is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

void up_check_handle(const char *handle, up_field_errors_t *errs)
{
    if (handle == NULL || *handle == '\0') {
        up_field_errors_add(errs, "handle", "handle_required", "Handle is required.");
        return;
    }
    size_t len = strlen(handle);
    if (len < UP_HANDLE_MIN)
        up_field_errors_add(errs, "handle", "handle_too_short",
                            "Handle must be at least 3 characters long.");
    if (len > UP_HANDLE_MAX) {
        up_field_errors_add(errs, "handle", "handle_too_long",
                            "Handle must be at most 30 characters long.");
        return; /* nothing else is worth saying about it */
    }
    bool bad_char = false, letter = false, bad_dots = false;
    for (size_t i = 0; i < len; i++) {
        char c = handle[i];
        if (is_letter(c) || c == '_')
            letter = true;
        else if (!is_digit(c) && c != '.')
            bad_char = true;
        if (c == '.' && (i == 0 || i == len - 1 || handle[i + 1] == '.'))
            bad_dots = true;
    }
    if (bad_char)
        up_field_errors_add(errs, "handle", "handle_invalid_chars",
                            "Handle may contain only letters, digits, underscores and periods.");
    if (bad_dots)
        up_field_errors_add(errs, "handle", "handle_invalid_dots",
                            "Handle must not start or end with a period or have two in a row.");
    if (!letter && !bad_char)
        up_field_errors_add(errs, "handle", "handle_no_letter",
                            "Handle must contain at least one letter or underscore.");
    char lower[UP_HANDLE_MAX + 1];
    if (up_ascii_lower(handle, lower, sizeof lower)) {
        for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
            if (strcmp(lower, reserved[i]) == 0) {
                up_field_errors_add(errs, "handle", "handle_reserved", "That handle is reserved.");
                break;
            }
        }
    }
}

/* RFC 5322 atext, the characters of a dot-atom local part besides '.'. */
static bool is_atext(char c)
{
    return is_letter(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+/=?^_`{|}~-", c));
}

static bool valid_local(const char *s, size_t len)
{
    if (len == 0 || len > 64 || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !is_atext(s[i]))
            return false;
    }
    return true;
}

/* Host names: labels of letters, digits and inner hyphens, 1..63 each; at
 * least two labels; the last (the top-level domain) alphabetic, 2+ letters. */
static bool valid_domain(const char *s, size_t len)
{
    size_t labels = 0, start = 0;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (!is_letter(s[i]) && !is_digit(s[i]) && s[i] != '-')
                return false;
            continue;
        }
        size_t n = i - start;
        if (n == 0 || n > 63 || s[start] == '-' || s[i - 1] == '-')
            return false;
        labels++;
        if (i == len) {
            if (n < 2)
                return false;
            for (size_t k = start; k < i; k++)
                if (!is_letter(s[k]))
                    return false;
        }
        start = i + 1;
    }
    return labels >= 2;
}

void up_check_email(const char *email, up_field_errors_t *errs)
{
    if (email == NULL || *email == '\0') {
        up_field_errors_add(errs, "email", "email_required", "Email is required.");
        return;
    }
    size_t len = strlen(email);
    if (len > UP_EMAIL_MAX) {
        up_field_errors_add(errs, "email", "email_too_long",
                            "Email must be at most 254 characters long.");
        return;
    }
    const char *at = strchr(email, '@');
    if (at == NULL || strchr(at + 1, '@') != NULL || !valid_local(email, (size_t)(at - email)) ||
        !valid_domain(at + 1, len - (size_t)(at - email) - 1))
        up_field_errors_add(errs, "email", "email_invalid",
                            "Email must be a valid address such as name@example.com.");
}

cJSON *up_field_errors_json(const up_field_errors_t *errs)
{
    cJSON *out = cJSON_CreateObject();
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < errs->count; i++) {
        const rw_field_error_t *e = &errs->items[i];
        cJSON *list = cJSON_GetObjectItemCaseSensitive(out, e->field);
        if (list == NULL)
            list = cJSON_AddArrayToObject(out, e->field);
        cJSON *item = cJSON_CreateObject();
        if (list == NULL || item == NULL) {
            cJSON_Delete(item);
            cJSON_Delete(out);
            return NULL;
        }
        cJSON_AddStringToObject(item, "code", e->code);
        cJSON_AddStringToObject(item, "message", e->message);
        cJSON_AddItemToArray(list, item);
    }
    return out;
}
