// SPDX-License-Identifier: Apache-2.0
#include "format/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace pyengine::json {

Value Value::boolean(bool b) { Value v; v.type_ = Type::Bool; v.bool_ = b; return v; }
Value Value::number(double d) { Value v; v.type_ = Type::Number; v.number_ = d; return v; }
Value Value::string(std::string s) { Value v; v.type_ = Type::String; v.string_ = std::move(s); return v; }
Value Value::array() { Value v; v.type_ = Type::Array; return v; }
Value Value::object() { Value v; v.type_ = Type::Object; return v; }

bool Value::is_integer() const {
    return type_ == Type::Number && std::isfinite(number_) && std::floor(number_) == number_ &&
           number_ >= -9.2e18 && number_ <= 9.2e18;
}

const Value* Value::find(const std::string& key) const {
    for (const auto& m : members_) {
        if (m.first == key) return &m.second;
    }
    return nullptr;
}

void Value::set(std::string key, Value v) {
    for (auto& m : members_) {
        if (m.first == key) { m.second = std::move(v); return; }
    }
    members_.emplace_back(std::move(key), std::move(v));
}

const char* type_name(Type t) {
    switch (t) {
        case Type::Null: return "null";
        case Type::Bool: return "boolean";
        case Type::Number: return "number";
        case Type::String: return "string";
        case Type::Array: return "array";
        case Type::Object: return "object";
    }
    return "?";
}

bool valid_utf8(const std::string& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        const unsigned char c = *p;
        size_t n;
        uint32_t cp;
        if (c < 0x80) { ++p; continue; }
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1Fu; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0Fu; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07u; }
        else return false;
        if (static_cast<size_t>(end - p) <= n) return false;
        for (size_t i = 1; i <= n; ++i) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        static const uint32_t min_for_len[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
        p += n + 1;
    }
    return true;
}

namespace {

void dump_string(const std::string& s, std::string& out) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

void dump_value(const Value& v, std::string& out) {
    switch (v.type()) {
        case Type::Null: out += "null"; break;
        case Type::Bool: out += v.as_bool() ? "true" : "false"; break;
        case Type::Number: {
            char buf[32];
            // Non-finite numbers as Python's json writes and reads them (a Clip's open bound).
            if (std::isnan(v.as_number())) { out += "NaN"; break; }
            if (std::isinf(v.as_number())) {
                out += v.as_number() > 0 ? "Infinity" : "-Infinity";
                break;
            }
            if (v.is_integer()) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v.as_int()));
            else std::snprintf(buf, sizeof buf, "%.17g", v.as_number());
            out += buf;
            break;
        }
        case Type::String: dump_string(v.as_string(), out); break;
        case Type::Array: {
            out += '[';
            bool first = true;
            for (const auto& it : v.items()) {
                if (!first) out += ',';
                first = false;
                dump_value(it, out);
            }
            out += ']';
            break;
        }
        case Type::Object: {
            out += '{';
            bool first = true;
            for (const auto& m : v.members()) {
                if (!first) out += ',';
                first = false;
                dump_string(m.first, out);
                out += ':';
                dump_value(m.second, out);
            }
            out += '}';
            break;
        }
    }
}

class Parser {
public:
    Parser(const char* text, size_t length, size_t max_depth)
        : p_(text), begin_(text), end_(text + length), max_depth_(max_depth) {}

    Value parse_document() {
        Value v = parse_value(0);
        skip_ws();
        if (p_ != end_) fail("unexpected text after the end of the document");
        return v;
    }

private:
    [[noreturn]] void fail(const char* what) const {
        throw ModelFormatError(str("invalid JSON at offset ", p_ - begin_, ": ", what));
    }
    void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
    }
    bool consume(const char* lit) {
        size_t n = std::strlen(lit);
        if (static_cast<size_t>(end_ - p_) >= n && std::memcmp(p_, lit, n) == 0) {
            p_ += n;
            return true;
        }
        return false;
    }

    Value parse_value(size_t depth) {
        if (depth > max_depth_) fail("nesting too deep");
        skip_ws();
        if (p_ >= end_) fail("unexpected end of text");
        char c = *p_;
        if (c == '{') return parse_object(depth);
        if (c == '[') return parse_array(depth);
        if (c == '"') return Value::string(parse_string());
        if (consume("true")) return Value::boolean(true);
        if (consume("false")) return Value::boolean(false);
        if (consume("null")) return Value();
        // The non-finite tokens Python's json module writes for inf and nan (allow_nan).
        if (consume("NaN")) return Value::number(std::nan(""));
        if (consume("Infinity")) return Value::number(HUGE_VAL);
        if (consume("-Infinity")) return Value::number(-HUGE_VAL);
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail("unexpected character");
    }

    Value parse_object(size_t depth) {
        ++p_;  // '{'
        Value obj = Value::object();
        skip_ws();
        if (p_ < end_ && *p_ == '}') { ++p_; return obj; }
        for (;;) {
            skip_ws();
            if (p_ >= end_ || *p_ != '"') fail("expected a string key");
            std::string key = parse_string();
            // Objects are small (attributes); the cap keeps the duplicate check cheap.
            if (obj.members().size() >= 4096) fail("object has more than 4096 members");
            if (obj.find(key) != nullptr) fail("duplicate key in object");
            skip_ws();
            if (p_ >= end_ || *p_ != ':') fail("expected ':'");
            ++p_;
            obj.set(std::move(key), parse_value(depth + 1));
            skip_ws();
            if (p_ < end_ && *p_ == ',') { ++p_; continue; }
            if (p_ < end_ && *p_ == '}') { ++p_; return obj; }
            fail("expected ',' or '}'");
        }
    }

    Value parse_array(size_t depth) {
        ++p_;  // '['
        Value arr = Value::array();
        skip_ws();
        if (p_ < end_ && *p_ == ']') { ++p_; return arr; }
        for (;;) {
            arr.push_back(parse_value(depth + 1));
            skip_ws();
            if (p_ < end_ && *p_ == ',') { ++p_; continue; }
            if (p_ < end_ && *p_ == ']') { ++p_; return arr; }
            fail("expected ',' or ']'");
        }
    }

    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    uint32_t parse_hex4() {
        if (end_ - p_ < 4) fail("truncated \\u escape");
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            char c = *p_++;
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
            else fail("bad hex digit in \\u escape");
        }
        return v;
    }

    std::string parse_string() {
        ++p_;  // '"'
        std::string out;
        for (;;) {
            if (p_ >= end_) fail("unterminated string");
            char c = *p_++;
            if (c == '"') {
                // Names reach Python as str; refuse bytes that are not text here.
                if (!valid_utf8(out)) fail("string is not valid UTF-8");
                return out;
            }
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') { out += c; continue; }
            if (p_ >= end_) fail("unterminated escape");
            char e = *p_++;
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = parse_hex4();
                    if (cp >= 0xD800 && cp < 0xDC00) {
                        if (!consume("\\u")) fail("lone high surrogate");
                        uint32_t lo = parse_hex4();
                        if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp < 0xE000) {
                        fail("lone low surrogate");
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: fail("unknown escape");
            }
        }
    }

    Value parse_number() {
        const char* start = p_;
        if (*p_ == '-') ++p_;
        if (p_ >= end_) fail("truncated number");
        if (*p_ == '0') {
            ++p_;
        } else if (*p_ >= '1' && *p_ <= '9') {
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        } else {
            fail("bad number");
        }
        if (p_ < end_ && *p_ == '.') {
            ++p_;
            if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail("bad fraction");
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail("bad exponent");
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        }
        // strtod needs a terminated string; the text is not, so copy the token.
        std::string token(start, static_cast<size_t>(p_ - start));
        if (token.size() > 64) fail("number too long");
        double d = std::strtod(token.c_str(), nullptr);
        if (!std::isfinite(d)) fail("number out of range");
        return Value::number(d);
    }

    const char* p_;
    const char* begin_;
    const char* end_;
    size_t max_depth_;
};

}  // namespace

std::string Value::dump() const {
    std::string out;
    dump_value(*this, out);
    return out;
}

Value parse(const char* text, size_t length, size_t max_depth) {
    return Parser(text, length, max_depth).parse_document();
}

}  // namespace pyengine::json
