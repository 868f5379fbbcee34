import Foundation
import XCTest
import ILADiff
@testable import ILAMask

/// The Oniguruma-compatible regex engine of Split / Replace patterns. Every expectation below
/// was read off Hugging Face `tokenizers` (Replace(Regex(p), …) on the string); random patterns
/// are compared with it in bulk by bench/tokenizer_check.py.
final class TokenizerRegexTests: XCTestCase {
    private func matches(_ pattern: String, _ text: String, file: StaticString = #filePath, line: UInt = #line) -> [Range<Int>] {
        do {
            return try OnigRegex(pattern).matches(in: Array(text.unicodeScalars))
        } catch {
            XCTFail("\(pattern) refused: \(error)", file: file, line: line)
            return []
        }
    }

    /// The text with every match replaced by "_" (what `Replace` does).
    private func replaced(_ pattern: String, _ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var prev = 0
        for r in matches(pattern, text, file: file, line: line) {
            out.append(contentsOf: s[prev..<r.lowerBound])
            out.append("_")
            prev = r.upperBound
        }
        out.append(contentsOf: s[prev...])
        return String(out)
    }

    func testEmptyMatchesFollowTheOnigIterator() {
        XCTAssertEqual(matches("a*", "baab"), [0..<0, 1..<3, 4..<4])
        XCTAssertEqual(replaced("a*", "baab"), "_b_b_")
        XCTAssertEqual(replaced("", "ab"), "_a_b_")
        XCTAssertEqual(replaced("x*", "ab"), "_a_b_")
        XCTAssertEqual(replaced("(?=a)", "ba"), "b_a")
        XCTAssertEqual(replaced("(?!a)", "ba"), "_ba_")
    }

    func testAnchors() {
        XCTAssertEqual(replaced("^a", "a\na"), "_\n_")
        XCTAssertEqual(replaced("a$", "a\na"), "_\n_")
        XCTAssertEqual(replaced("\\Aa", "a\na"), "_\na")
        XCTAssertEqual(replaced("\\Z", "a\n"), "a_\n_")
        XCTAssertEqual(replaced("\\z", "a\n"), "a\n_")
        XCTAssertEqual(replaced("$", "a\nb"), "a_\nb_")
        XCTAssertEqual(replaced("^", "a\nb"), "_a\n_b")
        XCTAssertEqual(replaced("^", "ab\n"), "_ab\n")  // never at the very end
    }

    func testPriorityBacktrackingAndPossessives() {
        XCTAssertEqual(replaced("a|ab", "ab"), "_b")
        XCTAssertEqual(replaced("(?:a|ab)(?=c)", "abc"), "_c")
        XCTAssertEqual(replaced("\\s+(?!\\S)", "a   b"), "a_ b")
        XCTAssertEqual(replaced("(?>a+)a", "aaa"), "aaa")
        XCTAssertEqual(replaced("a++a", "aaa"), "aaa")
        XCTAssertEqual(replaced("(?:ab)++", "ababa"), "_a")
        XCTAssertEqual(replaced("xa*?", "xaa"), "_aa")
        XCTAssertEqual(replaced("xa??", "xa"), "_a")
    }

    func testIntervalsReadTheRubyWay() {
        XCTAssertEqual(replaced("a{,2}", "aaa"), "__")
        XCTAssertEqual(replaced("a{2}?", "aaa"), "_a_")       // (?:a{2})?, not a lazy {2}
        XCTAssertEqual(replaced("xa{2}??", "xaa"), "_aa")
        XCTAssertEqual(replaced("xa{1,2}?", "xaa"), "_a")     // lazy
        XCTAssertEqual(replaced("xa{2,}?", "xaaa"), "_a")
        XCTAssertEqual(replaced("xa{,2}?", "xaa"), "_aa")
        XCTAssertEqual(replaced("xa{2}+", "xaaaaa"), "_a")    // (?:a{2})+
        XCTAssertEqual(replaced("xa{1,2}+", "xaaaa"), "_")
        XCTAssertEqual(replaced("x{1,2}{2}", "xxxxx"), "_x")
        XCTAssertEqual(replaced("a{", "a{"), "_")             // not an interval: a literal
        XCTAssertEqual(replaced("a{x}", "a{x}"), "_")
    }

    func testClassesAndCaseFolding() {
        XCTAssertEqual(replaced("[]a]", "]a"), "__")
        XCTAssertEqual(replaced("[a-]", "-a"), "__")
        XCTAssertEqual(replaced("[-a]", "-a"), "__")
        XCTAssertEqual(replaced("[\\w-]", "-x"), "__")
        XCTAssertEqual(replaced("[^\\S\\r\\n]", " \t\n"), "__\n")
        XCTAssertEqual(replaced("\\s", "\u{1C}\u{85}"), "\u{1C}_")
        XCTAssertEqual(replaced(".", "\r\n"), "_\n")
        XCTAssertEqual(replaced("\\p{l}", "aB1"), "__1")
        XCTAssertEqual(replaced("\\p{ L}", "aB1"), "__1")
        XCTAssertEqual(replaced("\\p{^L}", "a1"), "a_")
        XCTAssertEqual(replaced("\\P{^L}", "a1"), "_1")
        XCTAssertEqual(replaced("\\x41\\u0042\\x{43}", "ABC"), "_")
        XCTAssertEqual(replaced("(?i:k)", "\u{212A}Kk"), "___")     // Kelvin sign folds to k
        XCTAssertEqual(replaced("(?i:s)", "\u{17F}Ss"), "___")      // long s folds to s
        XCTAssertEqual(replaced("(?i:i)", "\u{130}\u{131}Ii"), "\u{130}\u{131}__")
        XCTAssertEqual(replaced("'(?i:[sdmt]|ll|ve|re)", "'S 'Ll 'x"), "_ _ 'x")
    }

    func testUnicodeVersionOfClasses() {
        // Oniguruma has Unicode 16: U+088F (new in 17) is unassigned to it, U+0295 still Ll.
        XCTAssertEqual(replaced("\\p{L}", "\u{88F}a"), "\u{88F}_")
        XCTAssertEqual(replaced("\\p{Cn}", "\u{88F}a"), "_a")
        XCTAssertEqual(replaced("\\p{Ll}", "\u{295}"), "_")
        // Its \w counts ² ³ ¹ ¼ ½ ¾ but not the joiners.
        XCTAssertEqual(replaced("\\w", "²½\u{200D}"), "__\u{200D}")
    }

    func testRefusalsNameTheConstruct() {
        let cases: [(String, String)] = [
            ("(?<=a)b", "lookbehind"), ("(?<!a)b", "lookbehind"), ("(a)\\1", "\\1"), ("\\bx", "\\b"),
            ("\\h", "\\h"), ("[[:alpha:]]", "POSIX"), ("[a-c&&b]", "&&"), ("\\p{Han}", "\\p{Han}"),
            ("(?i)x", "group (?i"), ("(?x)a b", "group (?x"), ("(?:a*)*", "can match empty"),
            ("(?i:st)", "\"st\""), ("(?i:é)", "non-ASCII"), ("\\Qa\\E", "\\Q"), ("*a", "nothing to repeat"),
            ("a)", "unmatched ')'"), ("(a", "unterminated group"), ("[a", "unterminated"), ("a{3,2}", "maximum below"),
            ("(?i:\\p{L})", "case-insensitive class"), ("\\k<x>", "\\k"), ("(?#c)", "group (?#"),
        ]
        for (pattern, part) in cases {
            XCTAssertThrowsError(try OnigRegex(pattern), pattern) { error in
                let message = (error as? RegexRefusal)?.message ?? "\(error)"
                XCTAssertTrue(message.contains(part), "\(pattern): \"\(message)\" lacks \"\(part)\"")
            }
        }
    }

    /// The hand-written matchers of the GPT-2, Llama 3 and Qwen2 patterns agree with the engine
    /// (given the pattern in a spelling the hand-written matchers do not claim).
    func testHandWrittenSplitPatternsAgreeWithTheEngine() throws {
        let sources = [(SplitRegex.gpt2, SplitRegex.gpt2Source), (SplitRegex.llama3(maxDigits: 3), SplitRegex.llama3Source),
                       (SplitRegex.llama3(maxDigits: 1), SplitRegex.qwen2Source)]
        var texts = TokenizerFamilyTests.strings
        var rng = SystemRandomNumberGenerator()
        let pool = Array("aZ9 '\t\n\r.,!é中\u{301}\u{A0}\u{2028}٣ſK🙂sStTdDmMlLrReEvV".unicodeScalars)
        for _ in 0..<2000 {
            var v = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...20, using: &rng) { v.append(pool.randomElement(using: &rng)!) }
            texts.append(String(v))
        }
        for (known, source) in sources {
            let engine = try OnigRegex("(?:" + source + ")")
            for t in texts {
                let s = Array(t.unicodeScalars)
                XCTAssertEqual(known.matchEnds(s), engine.matches(in: s).map(\.upperBound), "\(known) on \(t.debugDescription)")
            }
        }
    }

    func testCatastrophicPatternsStop() throws {
        // Exponential backtracking: `tokenizers` fails ("retry-limit-in-match over"); the engine
        // stops after as many steps as Oniguruma allows instead of running for ever.
        let re = try OnigRegex("(?:a|aa)+(?:a|aa)+b")
        let start = Date()
        XCTAssertEqual(re.matches(in: Array(String(repeating: "a", count: 60).unicodeScalars)), [])
        XCTAssertLessThan(Date().timeIntervalSince(start), 60)
        // Deep nesting is refused before it can exhaust the stack.
        XCTAssertThrowsError(try OnigRegex(String(repeating: "(", count: 100_000)))
    }
}
