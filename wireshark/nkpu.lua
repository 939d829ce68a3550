-- nkpu.lua: a Wireshark dissector for BitLocker Network Unlock (MS-NKPU), shipped with nulab.
--
-- It runs after DHCP (a postdissector) on UDP 67/68 and 546/547 and shows as named fields:
--   DHCPv4: option 43 sub-option 1 (the certificate thumbprint) and sub-option 2 (the first
--           128 bytes of the key protector in a request, the 60-byte reply in a reply);
--           option 125 (enterprise 311) sub-option 1 (the last 128 bytes of the key protector);
--   DHCPv6: option 17 (enterprise 311) sub-options 1 (thumbprint) and 2 (key protector, or the
--           60-byte reply).
-- With a key log (the NKPU_SESSION lines nulab's scenario runs write as nkpu-keys.log, the
-- format of `nulab doctor`'s key log), it shows each exchange's session key SK: a request is
-- matched by its thumbprint and the first 16 bytes of its key protector, a reply by the
-- transaction id of a request matched earlier in the capture. With SK known (from the key log,
-- or the "Session key" preference for a single exchange) it opens the reply as the client does:
-- AES-256-CCM (RFC 3610, 16-byte tag first on the wire, 12-byte zero nonce, no associated
-- data), written out below in Lua since Wireshark's Lua has no AES, and shows whether the tag
-- verifies under SK, the plaintext's 12-byte header and the network key CK.
--
-- Install: `nulab wireshark install` (into Wireshark's personal Lua plugins folder; it keeps a
-- different nkpu.lua already there unless --force), or copy this file there yourself:
--   mkdir -p ~/.local/lib/wireshark/plugins && cp wireshark/nkpu.lua ~/.local/lib/wireshark/plugins/
-- or load it for one run: tshark -X lua_script:wireshark/nkpu.lua -r capture.pcap
-- The key log: Edit > Preferences > Protocols > NKPU > Key log file, or
--   tshark -X lua_script:wireshark/nkpu.lua -o nkpu.keylog:path/to/nkpu-keys.log -r capture.pcap

local nkpu = Proto("nkpu", "BitLocker Network Unlock")

local pf = {
    kind = ProtoField.string("nkpu.kind", "Message"),
    family = ProtoField.string("nkpu.family", "Transport"),
    xid = ProtoField.string("nkpu.xid", "Transaction id"),
    thumbprint = ProtoField.bytes("nkpu.thumbprint", "Certificate thumbprint"),
    kp_first = ProtoField.bytes("nkpu.kp.first_half", "Key protector, first 128 bytes (option 43 sub-option 2)"),
    kp_second = ProtoField.bytes("nkpu.kp.second_half", "Key protector, last 128 bytes (option 125 sub-option 1)"),
    kp = ProtoField.bytes("nkpu.kp", "Key protector (256 bytes)"),
    reply = ProtoField.bytes("nkpu.reply", "Key protector reply (tag, then AES-256-CCM ciphertext)"),
    reply_tag = ProtoField.bytes("nkpu.reply.tag", "Tag"),
    reply_ciphertext = ProtoField.bytes("nkpu.reply.ciphertext", "Ciphertext of CK"),
    session_key = ProtoField.string("nkpu.session_key", "Session key SK (from the key log)"),
    keylog_line = ProtoField.uint32("nkpu.keylog.line", "Key log line"),
    reply_verified = ProtoField.string("nkpu.reply.verified", "Tag under SK"),
    reply_header = ProtoField.bytes("nkpu.reply.header", "Decrypted header (key blob: size 44, version 1, type 0x2006)"),
    reply_ck = ProtoField.bytes("nkpu.reply.ck", "Decrypted network key CK"),
}
nkpu.fields = {
    pf.kind, pf.family, pf.xid, pf.thumbprint, pf.kp_first, pf.kp_second, pf.kp, pf.reply,
    pf.reply_tag, pf.reply_ciphertext, pf.session_key, pf.keylog_line, pf.reply_verified,
    pf.reply_header, pf.reply_ck,
}

nkpu.prefs.keylog = Pref.string("Key log file", "", "NKPU_SESSION lines: thumbprint, key protector prefix, session key")
nkpu.prefs.session_key = Pref.string("Session key", "", "SK in hex (64 digits), for replies no key log line matches")

-- AES-256 (FIPS 197), the forward cipher only: CCM's counter mode and CBC-MAC need no other.
local band, bor, bxor, lshift, rshift = bit32.band, bit32.bor, bit32.bxor, bit32.lshift, bit32.rshift

local function xtime(a)
    a = lshift(a, 1)
    if band(a, 0x100) ~= 0 then
        a = bxor(a, 0x11b)
    end
    return a
end

local function rotl8(x, n)
    return band(bor(lshift(x, n), rshift(x, 8 - n)), 0xff)
end

-- The S-box, computed (multiplicative inverse in GF(2^8), then the affine map) rather than
-- typed in: p walks the field by powers of 3, q by powers of its inverse.
local sbox = { [0] = 0x63 }
do
    local p, q = 1, 1
    repeat
        p = band(bxor(p, xtime(p)), 0xff)
        q = band(bxor(q, lshift(q, 1)), 0xff)
        q = band(bxor(q, lshift(q, 2)), 0xff)
        q = band(bxor(q, lshift(q, 4)), 0xff)
        if band(q, 0x80) ~= 0 then
            q = bxor(q, 0x09)
        end
        sbox[p] = bxor(q, rotl8(q, 1), rotl8(q, 2), rotl8(q, 3), rotl8(q, 4), 0x63)
    until p == 1
end

-- The 15 round keys of a 32-byte key, as 240 bytes (1-based).
local function aes256_expand(key)
    local w = {}
    for i = 1, 32 do
        w[i] = key[i]
    end
    local rcon = 1
    for i = 33, 240, 4 do
        local t = { w[i - 4], w[i - 3], w[i - 2], w[i - 1] }
        local word = (i - 1) / 4
        if word % 8 == 0 then
            t = { bxor(sbox[t[2]], rcon), sbox[t[3]], sbox[t[4]], sbox[t[1]] }
            rcon = xtime(rcon)
        elseif word % 8 == 4 then
            t = { sbox[t[1]], sbox[t[2]], sbox[t[3]], sbox[t[4]] }
        end
        for j = 0, 3 do
            w[i + j] = bxor(w[i + j - 32], t[j + 1])
        end
    end
    return w
end

-- One 16-byte block (1-based table) encrypted under the expanded key `w`.
local function aes256_encrypt(w, block)
    local s = {}
    for i = 1, 16 do
        s[i] = bxor(block[i], w[i])
    end
    for round = 1, 14 do
        local t = {}
        for c = 0, 3 do
            for r = 0, 3 do
                t[1 + r + 4 * c] = sbox[s[1 + r + 4 * ((c + r) % 4)]]
            end
        end
        s = t
        if round < 14 then
            for c = 0, 3 do
                local a0, a1, a2, a3 = s[1 + 4 * c], s[2 + 4 * c], s[3 + 4 * c], s[4 + 4 * c]
                local x = bxor(a0, a1, a2, a3)
                s[1 + 4 * c] = bxor(a0, x, xtime(bxor(a0, a1)))
                s[2 + 4 * c] = bxor(a1, x, xtime(bxor(a1, a2)))
                s[3 + 4 * c] = bxor(a2, x, xtime(bxor(a2, a3)))
                s[4 + 4 * c] = bxor(a3, x, xtime(bxor(a3, a0)))
            end
        end
        for i = 1, 16 do
            s[i] = bxor(s[i], w[16 * round + i])
        end
    end
    return s
end

-- Opens a 60-byte reply (1-based byte table: tag, then 44 ciphertext bytes) under the 32-byte
-- key: whether the tag verifies, and the 44 plaintext bytes. RFC 3610 with M = 16, L = 3.
local function ccm_open(key, reply)
    local w = aes256_expand(key)
    local function counter(i)
        return aes256_encrypt(w, { 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i })
    end
    local plain = {}
    for n = 0, 2 do
        local stream = counter(n + 1)
        for j = 1, 16 do
            local k = 16 * n + j
            if k <= 44 then
                plain[k] = bxor(reply[16 + k], stream[j])
            end
        end
    end
    local x = aes256_encrypt(w, { 0x3a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 44 })
    for n = 0, 2 do
        local block = {}
        for j = 1, 16 do
            block[j] = bxor(x[j], plain[16 * n + j] or 0)
        end
        x = aes256_encrypt(w, block)
    end
    local s0 = counter(0)
    local verified = true
    for j = 1, 16 do
        if bxor(x[j], s0[j]) ~= reply[j] then
            verified = false
        end
    end
    return verified, plain
end

local function hex_to_bytes(text)
    local bytes = {}
    for pair in text:gmatch("%x%x") do
        bytes[#bytes + 1] = tonumber(pair, 16)
    end
    return bytes
end

local function bytes_to_hex(bytes, from, to)
    local out = {}
    for i = from, to do
        out[#out + 1] = string.format("%02x", bytes[i])
    end
    return table.concat(out)
end

local f_udp = Field.new("udp")
local f_srcport = Field.new("udp.srcport")
local f_dstport = Field.new("udp.dstport")

-- The key log, read once per file name: entries by thumbprint and key protector prefix.
local keylog = { path = nil, by_request = {} }
local sessions_by_xid = {}

local function load_keylog()
    local path = nkpu.prefs.keylog
    if path == nil or path == "" then
        path = os.getenv("NKPU_KEYLOG") or ""
    end
    if path == keylog.path then
        return
    end
    keylog = { path = path, by_request = {} }
    if path == "" then
        return
    end
    local file = io.open(path, "r")
    if file == nil then
        return
    end
    local n = 0
    for line in file:lines() do
        n = n + 1
        local thumb, prefix, key = line:match("^%s*NKPU_SESSION%s+(%x+)%s+(%x+)%s+(%x+)%s*$")
        if thumb ~= nil and #thumb == 40 and #prefix == 32 and #key == 64 then
            keylog.by_request[thumb:lower() .. ":" .. prefix:lower()] = { key = key:lower(), line = n }
        end
    end
    file:close()
end

function nkpu.init()
    sessions_by_xid = {}
    keylog.path = nil
end

local function hex(tvbr)
    return tostring(tvbr:bytes()):lower()
end

-- Sub-options of `width` bytes of code and of length in tvb range [from, to).
local function suboptions(tvb, from, to, width)
    local list = {}
    local at = from
    while at + 2 * width <= to do
        local code = tvb(at, width):uint()
        local len = tvb(at + width, width):uint()
        local data = at + 2 * width
        if data + len > to then
            break
        end
        list[#list + 1] = { code = code, at = data, len = len }
        at = data + len
    end
    return list
end

-- Shows the exchange's SK from the key log; returns it (hex) if known.
local function show_session(tree, family, xid, thumb_hex, kp_prefix_hex)
    load_keylog()
    local entry = nil
    if thumb_hex ~= nil then
        entry = keylog.by_request[thumb_hex .. ":" .. kp_prefix_hex]
        if entry ~= nil then
            sessions_by_xid[family .. xid] = entry
        end
    else
        entry = sessions_by_xid[family .. xid]
    end
    if entry ~= nil then
        tree:add(pf.session_key, entry.key)
        tree:add(pf.keylog_line, entry.line)
        return entry.key
    end
    return nil
end

-- The reply, opened when SK is known (the key log's, else the preference's).
local function show_reply(tree, tvb, at, key_hex)
    local item = tree:add(pf.reply, tvb(at, 60))
    item:add(pf.reply_tag, tvb(at, 16))
    item:add(pf.reply_ciphertext, tvb(at + 16, 44))
    if key_hex == nil then
        local pref = nkpu.prefs.session_key
        if pref ~= nil and pref:match("^%s*%x+%s*$") and #pref:gsub("%s", "") == 64 then
            key_hex = pref:gsub("%s", ""):lower()
        end
    end
    if key_hex == nil then
        return
    end
    local reply = {}
    for i = 0, 59 do
        reply[i + 1] = tvb(at + i, 1):uint()
    end
    local verified, plain = ccm_open(hex_to_bytes(key_hex), reply)
    if verified then
        item:add(pf.reply_verified, "verifies")
        item:add(pf.reply_header, ByteArray.new(bytes_to_hex(plain, 1, 12)):tvb("Decrypted reply")())
        item:add(pf.reply_ck, ByteArray.new(bytes_to_hex(plain, 13, 44)):tvb("Decrypted reply")())
    else
        item:add(pf.reply_verified, "does not verify (another session key, or a damaged reply)")
    end
end

local function dissect_v4(tvb, pinfo, root, base)
    if tvb:len() < base + 240 or tvb(base + 236, 4):uint() ~= 0x63825363 then
        return
    end
    local xid = string.format("%08x", tvb(base + 4, 4):uint())
    local at = base + 240
    local opt43, opt125 = nil, nil
    while at < tvb:len() do
        local code = tvb(at, 1):uint()
        if code == 255 then
            break
        end
        if code == 0 then
            at = at + 1
        else
            if at + 2 > tvb:len() then
                break
            end
            local len = tvb(at + 1, 1):uint()
            if at + 2 + len > tvb:len() then
                break
            end
            if code == 43 then
                opt43 = { at = at + 2, len = len }
            elseif code == 125 then
                opt125 = { at = at + 2, len = len }
            end
            at = at + 2 + len
        end
    end
    if opt43 == nil then
        return
    end
    local subs = suboptions(tvb, opt43.at, opt43.at + opt43.len, 1)
    local thumb, first, reply = nil, nil, nil
    for _, s in ipairs(subs) do
        if s.code == 1 and s.len == 20 then
            thumb = s
        elseif s.code == 2 and s.len == 128 then
            first = s
        elseif s.code == 2 and s.len == 60 then
            reply = s
        end
    end
    if thumb == nil and reply == nil then
        return
    end
    local tree = root:add(nkpu, tvb(opt43.at, opt43.len))
    tree:add(pf.family, "DHCPv4")
    tree:add(pf.xid, xid)
    if thumb ~= nil then
        tree:add(pf.kind, "request")
        tree:add(pf.thumbprint, tvb(thumb.at, 20))
        if first ~= nil then
            tree:add(pf.kp_first, tvb(first.at, 128))
        end
        if opt125 ~= nil and opt125.len >= 5 and tvb(opt125.at, 4):uint() == 311 then
            for _, s in ipairs(suboptions(tvb, opt125.at + 5, opt125.at + opt125.len, 1)) do
                if s.code == 1 and s.len == 128 then
                    tree:add(pf.kp_second, tvb(s.at, 128))
                end
            end
        end
        if first ~= nil then
            show_session(tree, "v4", xid, hex(tvb(thumb.at, 20)), hex(tvb(first.at, 16)))
        end
        pinfo.cols.info:append(" [Network Unlock request]")
    else
        tree:add(pf.kind, "reply")
        show_reply(tree, tvb, reply.at, show_session(tree, "v4", xid, nil, nil))
        pinfo.cols.info:append(" [Network Unlock reply]")
    end
end

local function dissect_v6(tvb, pinfo, root, base)
    if tvb:len() < base + 4 then
        return
    end
    local xid = string.format("%06x", tvb(base + 1, 3):uint())
    local at = base + 4
    while at + 4 <= tvb:len() do
        local code = tvb(at, 2):uint()
        local len = tvb(at + 2, 2):uint()
        if at + 4 + len > tvb:len() then
            break
        end
        if code == 17 and len >= 4 and tvb(at + 4, 4):uint() == 311 then
            local thumb, kp, reply = nil, nil, nil
            for _, s in ipairs(suboptions(tvb, at + 8, at + 4 + len, 2)) do
                if s.code == 1 and s.len == 20 then
                    thumb = s
                elseif s.code == 2 and s.len == 256 then
                    kp = s
                elseif s.code == 2 and s.len == 60 then
                    reply = s
                end
            end
            if thumb == nil and reply == nil then
                return
            end
            local tree = root:add(nkpu, tvb(at, 4 + len))
            tree:add(pf.family, "DHCPv6")
            tree:add(pf.xid, xid)
            if thumb ~= nil then
                tree:add(pf.kind, "request")
                tree:add(pf.thumbprint, tvb(thumb.at, 20))
                if kp ~= nil then
                    tree:add(pf.kp, tvb(kp.at, 256))
                    show_session(tree, "v6", xid, hex(tvb(thumb.at, 20)), hex(tvb(kp.at, 16)))
                end
                pinfo.cols.info:append(" [Network Unlock request]")
            else
                tree:add(pf.kind, "reply")
                show_reply(tree, tvb, reply.at, show_session(tree, "v6", xid, nil, nil))
                pinfo.cols.info:append(" [Network Unlock reply]")
            end
            return
        end
        at = at + 4 + len
    end
end

function nkpu.dissector(tvb, pinfo, root)
    local udp = f_udp()
    if udp == nil then
        return
    end
    local src, dst = f_srcport()(), f_dstport()()
    local base = udp.offset + 8
    if src == 67 or src == 68 or dst == 67 or dst == 68 then
        dissect_v4(tvb, pinfo, root, base)
    elseif src == 546 or src == 547 or dst == 546 or dst == 547 then
        dissect_v6(tvb, pinfo, root, base)
    end
end

register_postdissector(nkpu)
