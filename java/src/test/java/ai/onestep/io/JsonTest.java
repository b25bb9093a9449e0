package ai.onestep.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {
    @Test
    void parsesAndWritesBack() {
        String s = "{\"a\":[1,2.5,-3e2,true,false,null],\"b\":{\"c\":\"x\\\"y\\u00e9\"}}";
        Map<String, Object> m = Json.parseObject(s);
        assertEquals(List.of(1L, 2.5, -300.0, true, false), ((List<?>) m.get("a")).subList(0, 5));
        assertEquals("x\"y\u00e9", ((Map<?, ?>) m.get("b")).get("c"));
        assertEquals(m, Json.parseObject(Json.write(m)));
    }

    @Test
    void errorsNameTheOffset() {
        for (String bad : new String[] {"{", "{\"a\" 1}", "[1,]", "{\"a\":1,\"a\":2}", "tru", "1 2", "\"abc"}) {
            Json.JsonException e = assertThrows(Json.JsonException.class, () -> Json.parse(bad), bad);
            assertTrue(e.getMessage().contains("at offset"), e.getMessage());
        }
    }
}
